"""`python -m tts_client`: the `tts` command line."""

from tts_client.cli import main

if __name__ == "__main__":
    main()
