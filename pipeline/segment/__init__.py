"""From feature tables to training sequences: the `segment` stage (stage.py), the segments' on-disk
contract (contract.py), the layouts and their builders, the evaluation protocols, lazy row views."""
