"""Lightning's ``overrides`` package: the distributed samplers under the names code written against Lightning imports."""
