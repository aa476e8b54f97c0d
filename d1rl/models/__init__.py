"""Native LLaDA model, model adapter and loading (being written)."""
