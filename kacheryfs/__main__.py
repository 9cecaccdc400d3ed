from kacheryfs.cli import main

main()
