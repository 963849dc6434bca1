"""Images in, model-ready batches out: data sources (ImageFolder, list files, arrays) and preprocessing."""
