"""The base every layer stands on: errors, paths, params.yaml sections, Parquet tables, devices,
threads, where parallel work runs, and the stages' code dependencies. Imports nothing else of pipeline."""
