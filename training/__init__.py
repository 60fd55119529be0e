"""The Llama 3 pre-training recipe: schedules, long-context stages, annealing, scale-out, resume."""
