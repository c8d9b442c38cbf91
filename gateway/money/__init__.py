"""Money: micro-USD amounts, periods, prices, budgets, reservations and settlements, usage records."""
