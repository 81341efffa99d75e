"""Typer commands: parse, compose config, call one core function, render."""
