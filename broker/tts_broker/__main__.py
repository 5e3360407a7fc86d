from tts_broker.cli import main

main()
