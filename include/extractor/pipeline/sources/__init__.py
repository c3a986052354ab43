"""Where receipts come from: discovery of a day's objects (local folder or S3) and the
staging area that carries extraction results from the GPU task to the load."""
