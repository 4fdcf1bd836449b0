"""conductor.service.facade."""
