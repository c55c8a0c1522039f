from longrope.cli import main

main()
