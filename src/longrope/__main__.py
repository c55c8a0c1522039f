"""`python -m longrope` and the `longrope` command. Loading the commands imports torch and transformers (seconds
on a busy machine): Ctrl-C then ends quietly with status 130, as it does once a command runs, not with a
traceback of the import."""

import sys


def run() -> None:
    try:
        from longrope.cli import main
    except KeyboardInterrupt:
        from longrope.interrupts import NOTHING_SAVED, interrupt_status  # standard library only: quick

        print(f"interrupted while starting: {NOTHING_SAVED}", file=sys.stderr)
        sys.exit(interrupt_status())
    main()


if __name__ == "__main__":
    run()
