"""What apps and boards use (torch-free): :mod:`.predict` (classify one image with an
artifact), :mod:`.bundle` with :mod:`.templates` (the iOS and Android app bundles) and
:mod:`.frames` (the board demos' camera, video and folder loop)."""
