from .admin import main_entry

main_entry()
