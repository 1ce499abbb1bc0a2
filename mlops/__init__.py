"""The platform's core: plain, typed Python for every stage, with no Prefect import."""
