"""studybench: fair, reproducible comparison studies of semantic-segmentation losses."""

__version__ = "0.1.0"

#: Label value that every loss, metric and dataset treats as "not annotated".
IGNORE_INDEX = 255
