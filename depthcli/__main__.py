from depthcli.cli import entry

entry()
