from proc.cli import main

main()
