from sef.cli import program

program()
