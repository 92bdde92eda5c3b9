"""Evaluation: offline metrics, matches, tournaments, ratings, replays, service readiness."""
