"""In-service RPM patching with StarlingX sw-patch semantics: format, signing, controller."""
