"""The dashboard's pages, one file each with one render(), routed by st.navigation in dashboard/app.py."""
