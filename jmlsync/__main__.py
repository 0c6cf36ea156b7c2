from jmlsync.cli import main

main()
