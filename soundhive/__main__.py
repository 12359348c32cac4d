from soundhive.cli import main

main()
