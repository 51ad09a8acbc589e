"""The demo: replay a real trace through the real pipeline and print what it cost."""
