#!/usr/bin/env python3
"""Relay benchmark: the same as ``speeddata bench relay`` (see --help)."""

import sys

from speeddata.bench.relay import main

if __name__ == "__main__":
    sys.exit(main())
