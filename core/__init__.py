"""The torch-free core every layer may import: the model-repository contract, errors, machine facts."""
