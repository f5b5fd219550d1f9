"""The data in mappings/: value sets, medication recognition, units and rule parameters.

Loaded once at start-up, validated with marshmallow so that an invalid file stops the service
with a message naming the file and the entry, and handed to the engine as plain objects.
"""

from service.mapping.load import MappingError, load_mappings
from service.mapping.model import Mappings

__all__ = ["MappingError", "Mappings", "load_mappings"]
