"""OCI content: media types, descriptors, the registry client and the layout cache."""
