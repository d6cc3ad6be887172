"""Tests of the executor package."""
