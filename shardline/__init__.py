"""shardline: organisations answer sensitive questions together without handing their data to any one of them."""

__version__ = "0.1.0"
