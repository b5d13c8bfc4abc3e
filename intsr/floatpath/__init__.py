"""The only float code of intsr: weight import, float reference network, boundary conversions."""
