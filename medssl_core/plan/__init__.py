"""From a study's declaration to typed run specs with ids: studies, grids, identity, staleness."""
