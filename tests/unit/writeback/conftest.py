"""Write-back fixtures: the bundled rule parameters (canonical base, study identity)."""

from __future__ import annotations

import pytest

from service.mapping import Mappings
from service.mapping.model import Parameters


@pytest.fixture
def params(mappings: Mappings) -> Parameters:
    return mappings.parameters
