"""`python -m longrope` and the `longrope` command. Loading the commands imports torch and transformers (seconds
on a busy machine): Ctrl-C then ends quietly with status 130, as it does once a command runs, not with a
traceback of the import."""

import sys


def run() -> None:
    try:
        from longrope.cli import main
    except KeyboardInterrupt:
        print("interrupted: stopped while starting; nothing was done", file=sys.stderr)
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
