"""The configuration file: its tables (``schema``), the listen addresses (``listen``), TOML
values into settings (``structure``), the checks across keys (``checks``), how a refusal reads
(``errors``) and the entry points (``load``)."""
