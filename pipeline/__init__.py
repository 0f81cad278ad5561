"""The pipeline layer: whole-job commands (ship, demo, the CLI) that may use every stage below them."""
