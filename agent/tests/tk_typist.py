"""A Tk text widget that writes what the keyboard types into a file, for the agent's typing
tests: every Return appends the widget's text and a newline to the file (argv[1]) and empties
the widget, so the file grows line by line like `cat >> file` in a terminal."""

import sys
import tkinter as tk

out = sys.argv[1]
root = tk.Tk()
root.title("tk-typist")
root.geometry("900x300+0+0")
text = tk.Text(root)
text.pack(fill="both", expand=True)


def line_done(_event):
    with open(out, "a", encoding="utf-8") as f:
        f.write(text.get("1.0", "end-1c") + "\n")
    text.delete("1.0", "end")
    return "break"


text.bind("<Return>", line_done)
root.after(100, text.focus_force)
root.mainloop()
