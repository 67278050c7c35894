from pairless.cli import main

main()
