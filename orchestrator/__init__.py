"""The cluster directory: where every container lives, which hosts are alive, who listens accelerated."""
