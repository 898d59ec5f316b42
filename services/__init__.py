"""ShopLens core: settings, images, embedders, catalog (SQL), vectors (Qdrant) and search.

Importable without Streamlit so the command line, the scheduler and the tests share it.
"""
