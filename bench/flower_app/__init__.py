"""The heart-disease job as a Flower app: fedsilo's data loading, split, model and training
loop inside a Flower ClientApp, and a ServerApp running Flower's own strategy. bench/rounds.py
runs it on Flower's deployment engine against fedsilo; it runs in bench/.venv-flower, never in
the project's .venv."""
