"""Figures, each built only from saved tables and arrays (restyle without recomputing).

One module per figure, named after the figure file it writes; ``style`` holds the project style.
"""
