"""Models for build.yml and image YAML files."""
