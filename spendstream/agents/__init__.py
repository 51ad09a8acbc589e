"""The stream workers: faust agents around pure stages (decode, validate, price, write)."""
