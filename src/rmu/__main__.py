from rmu.cli import main

main()
