"""What runs inside application containers; standard library only."""
