"""The training coordinator: readiness, training, SPRT evaluation, promotion, Elo table."""
