"""Helpers the tests share: servers, stand-ins and builders, one module per need."""
