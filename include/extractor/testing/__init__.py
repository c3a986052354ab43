"""Test helpers shipped with the library (as transformers keeps ``testing_utils``):
synthetic receipt images, synthetic extraction results and tiny random-weight models.
Nothing in the product imports this package."""
