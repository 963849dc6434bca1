"""The ``eca-deploy`` command line: argument parsing only; the work lives in the pipeline stages."""
