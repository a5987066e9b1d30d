"""The model's life after training: MLflow tracking, export, the pyfunc model, the card, the registry."""
