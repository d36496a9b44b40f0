"""Group stage: peer groups as one label per company (taxonomies now; text-feature groupings later)."""

from finsae.group.taxonomy import TAXONOMIES, taxonomy_labels

__all__ = ["TAXONOMIES", "taxonomy_labels"]
