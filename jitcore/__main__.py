from jitcore.cli import main

main()
