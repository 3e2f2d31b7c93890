from retort.cli.main import main

main()
